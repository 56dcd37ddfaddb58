"""Brain-Score model plugin 'pixels' (brainscore-vision 2.4.2) as an itbench submission.

The plugin is loaded inside the sandbox from this submission's own environment
(requirements.txt), by Brain-Score's registry, with no installs at load time.
Its committed IT activations of the stimuli (written as PNG files) are the
features: Brain-Score's protocol reads them out with PLS(25); fixed-split fits
Table I's readout on them (PCA, then ridge with alpha per site by LOO-CV).
"""

from itbench.models.brainscore_plugin import BrainScorePluginFeatures
from itbench.models.recipes import LinearReadoutModel

MODEL_ID = "pixels"


def build(ctx):
    return LinearReadoutModel(
        BrainScorePluginFeatures(MODEL_ID),
        readout="ridge_cv",
        n_components=int(ctx.params["n_components"]),
        device=ctx.device,
        seed=ctx.seed,
    )
