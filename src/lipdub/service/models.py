"""The two task models the contract names: every layer of the service speaks of them."""

IDENTIFY = "kling-identify-face"
SYNC = "kling-advanced-lip-sync"
MODELS = (IDENTIFY, SYNC)
