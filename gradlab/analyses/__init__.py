"""Studies that use the models and the recorder, each writing an analysis folder
(gradlab.analysis_dirs) that `gradlab report` draws:

* init_gradients: gradient norms along depth of freshly initialized nets (`gradlab analyze gradients`)
* spp: signal propagation plots, Brock et al. 2021 (`gradlab analyze spp`)
* shattering: shattered gradients, Balduzzi et al. 2017 (`gradlab analyze shattering`)
* lesion: deleting blocks or layers of trained nets, Veit et al. 2016 (`gradlab lesion`)

sweep and init_inputs build the nets and batches the at-init studies loop over; lesion_runs
and lesion_deletions are the lesion study's trained runs and deletions; result is what
every study returns.
"""
