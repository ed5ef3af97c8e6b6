"""The EndoARSS network: DINOv2 backbone, LoRA/TESLA adapters, SMA, heads, checkpoints."""
