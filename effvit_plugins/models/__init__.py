"""Framework-free PyTorch cores, one module per family."""
