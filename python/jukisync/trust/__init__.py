"""Keys and trust: Ed25519 key files, the root-signed key registry (`keys`), and the trust
files kept beside a tier store (`storedir`).
"""
