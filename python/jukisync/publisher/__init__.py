"""The municipal side: reading update files (`input`), bundling and signing (`bundling`),
the durable outbox (`outbox`), the origin's chain writer (`origin.Publisher`), and the
node that publishes, confirms and resends over a transport (`node.PublisherNode`).
"""
