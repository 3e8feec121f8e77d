"""The running service end to end, as a user drives it, and the demo."""
