import os

# No network in tests: a pretrained tag must fail fast instead of hanging on the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TORCH_NUM_THREADS", "2")
