"""The operator's tools that work on a whole node: `snapshots` (snapshot and backup
archives, their verification and the rebuild that re-verifies every bundle) and
`selfcheck` (the security self-check, 自己点検, scored per item)."""
