"""Purpose-bound queries: the policy and task catalogue (`policy`), the query service
(`service`), request/reply over RabbitMQ (`rpc`), and the audit trail's reports
(`audit`).
"""
