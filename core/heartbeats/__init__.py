"""Heartbeat monitors: the ping path (group commit), lateness, the pings log."""
