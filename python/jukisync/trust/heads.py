"""Signing and verifying head announcements (DESIGN.md §3a, §7).

Who may sign a head of origin O:
- O itself (`relayed_by` None): the key's registry owner must be O;
- a centre relaying the head it holds (`relayed_by` = the centre id): the key's owner
  must be that centre, and a centre id is never a local government code (an origin
  cannot pass itself off as a centre).
The key must be valid for its owner at `announced_at`, and `announced_at` may not lie
beyond the receiver's clock by more than the allowed skew (a future-dated head would
stay "highest" for ever). The registry does not say which prefectures a centre serves;
a relay is only a hint to ask for signed envelopes, so a centre's word on another
prefecture can cost a request, never content.
"""

from __future__ import annotations

import msgspec

from jukisync import _core
from jukisync.wire import codes
from jukisync.wire.messages import Head, HeadAnnouncement, decode_head, encode

__all__ = ["HeadRejected", "sign_head", "verify_head"]


class HeadRejected(ValueError):
    """An announcement that does not verify; says why."""


def sign_head(head: Head, key_id: str, secret: bytes) -> bytes:
    """The encoded `HeadAnnouncement` of `head`, signed with `secret`."""
    body = encode(head)
    return encode(HeadAnnouncement(body=body, key_id=key_id, sig=_core.sign(secret, body)))


def verify_head(
    announcement: HeadAnnouncement,
    registry: _core.KeyRegistry,
    *,
    now_us: int,
    max_skew_us: int = 300_000_000,
) -> Head:
    """The announced `Head`, if `announcement` is signed as the rules above require."""
    known = registry.key_for(announcement.key_id)
    if known is None:
        raise HeadRejected(f"unknown key {announcement.key_id!r}")
    owner, public = known
    if not _core.verify(public, announcement.body, announcement.sig):
        raise HeadRejected(f"bad signature by key {announcement.key_id!r}")
    try:
        head = decode_head(announcement.body)
    except msgspec.DecodeError as exc:
        raise HeadRejected(f"undecodable head signed by {owner}: {exc}") from None
    if not codes.is_valid_local_government_code(head.origin):
        raise HeadRejected(f"head of {head.origin!r}: not a local government code")
    if head.relayed_by is None:
        if owner != head.origin:
            raise HeadRejected(f"head of {head.origin} signed by {owner}'s key")
    elif owner != head.relayed_by or codes.is_valid_local_government_code(owner):
        raise HeadRejected(
            f"head of {head.origin} relayed by {head.relayed_by!r} signed by {owner}'s key"
        )
    if head.announced_at > now_us + max_skew_us:
        raise HeadRejected(f"head of {head.origin} announced in the future ({head.announced_at})")
    if not registry.valid_at(announcement.key_id, owner, head.announced_at):
        raise HeadRejected(
            f"key {announcement.key_id!r} of {owner} not valid at {head.announced_at}"
        )
    return head
