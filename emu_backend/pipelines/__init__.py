"""Pipelines: what each ``emu-backend`` command does, as library calls.

One module per job, each with a frozen, validated config dataclass and one function taking it; the
command line (:mod:`emu_backend.cli`) only turns flags into these configs.

=====================================  ==========================  ==================================
module                                 config                      function
=====================================  ==========================  ==================================
:mod:`.run` (``emu-backend run``)      :class:`.RunConfig`         :func:`.run.run`
:mod:`.validate`                       :class:`.ValidateConfig`    :func:`.validate.validate`
:mod:`.predict`                        :class:`.PredictConfig`     :func:`.predict.predict`
:mod:`.train`                          :class:`.TrainJobConfig`    :func:`.train.train_on_files`
:mod:`.make_training_set`              :class:`.TrainingSetConfig` :func:`.build_training_set`
:mod:`.lightcone`                      :class:`.LightconeConfig`   :func:`.lightcone.lightcone`
=====================================  ==========================  ==================================

:mod:`.run_config` reads run configs from TOML; :mod:`.plot` draws the P(k) figure of a run;
:mod:`.provenance` gives the versions recorded in every output.

Examples
--------
>>> from emu_backend.pipelines.run import RunConfig, run
>>> RunConfig(grid=16, backend="za").redshifts
(0.0, 1.0)
"""
