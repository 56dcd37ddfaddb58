"""Where the numbers come from: data sources, assemblies, stimuli, splits, downloads.

``sources`` loads each benchmark's files into one shape (:class:`sources.SourceData`:
trial-averaged and trial-level ``xarray`` assemblies in BrainIO's presentation x
neuroid convention, plus a stimulus set); ``assembly`` reads and writes BrainIO
NetCDF, ``stimuli`` turns images into the tensors a submission sees, ``split``
owns the committed train/val/test files, ``download`` fetches with checksums,
``hvm`` names the HvM objects' categories. Nothing here scores or runs a model.
"""
