"""gradlab in the training loops people already use: a thin callback over the recorder
(gradlab.watch) and its run directory, for PyTorch Lightning (gradlab.integrations.lightning)
and Hugging Face transformers (gradlab.integrations.transformers). Each needs its library
(`pip install 'gradlab[lightning]'` or `'gradlab[transformers]'`); importing this package
imports neither.
"""
