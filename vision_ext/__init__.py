"""Vision methods in plain PyTorch: IRN, MACER and TD (one subpackage each, imported on demand)."""
