"""Tier nodes (aggregation centres, national): the node that applies, attests and forwards
(`node`), the daemon around it (`daemon`), health and metrics over HTTP
(`observability`).
"""
