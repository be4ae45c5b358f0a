"""The wire contract: msgspec Structs for updates, bundles, envelopes, control and registry
messages (`messages`), and the code rules and check digits (`codes`).
"""
