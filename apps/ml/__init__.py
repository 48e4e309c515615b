"""PyTorch advisory models: training and inference on the ml worker only."""
