"""Results as tables: terminal (rich), Markdown (report.md), wandb."""
