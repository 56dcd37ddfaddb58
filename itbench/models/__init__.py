"""Building blocks for submissions, so a Table I row is a few lines.

``features`` streams layer activations out of any torchvision/timm model with
reducers; ``readouts`` has OLS, ridge with per-neuroid generalised
cross-validation and PCA on torch (tested against scikit-learn); ``training``
fits MLP heads and fine-tunes networks; ``pretrained`` builds networks with
offline-aware weights; ``recipes`` combines these into the shapes of the
Table I rows; ``cache`` keeps activations, fitted states and predictions.
"""
