"""Datasets: readers of on-disk formats, joint transforms, the synthetic generator."""
