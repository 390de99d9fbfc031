"""Application layer: building from command-line args, the training and evaluation loops, reporting.

Entry scripts import this package; ``model/``, ``dataset/`` and ``utils/`` never import it.
"""
