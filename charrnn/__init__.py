"""charrnn: train a character-level RNN / LSTM / GRU language model on your own text,
sample from it, and see exactly what PyTorch's recurrent modules compute.

Importing the package does not import torch; the commands import it when they run.
"""

__version__ = "0.1.0"
