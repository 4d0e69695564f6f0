"""MTV: multi-task visual representation learning on a SigLIP encoder."""

__version__ = "0.1.0"
