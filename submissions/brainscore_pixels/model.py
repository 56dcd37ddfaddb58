"""Brain-Score's pixels plugin: its 196,608 features (256 x 256 RGB, bicubic), reproduced from the model input.

Under ``--protocol brainscore`` the features are read out with PLS(25), as
Brain-Score maps its ``pixels`` model; under fixed-split by ridge (CV alpha).
``source_size`` is the stimulus files' size (the demo's are 128 px);
``stride`` keeps every k-th feature (1 = the plugin's full width).
"""

from itbench.models.brainscore_pixels import BrainScorePixels
from itbench.models.recipes import LinearReadoutModel


def build(ctx):
    params = ctx.params
    featurizer = BrainScorePixels(params.get("source_size", 128), params.get("stride", 1))
    return LinearReadoutModel(featurizer, readout="ridge_cv", device=ctx.device)
