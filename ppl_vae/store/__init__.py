"""What every command writes, below training: files that commit whole, and one writer per folder.

- :mod:`~ppl_vae.store.checkpoint`: ``save_checkpoint`` / ``load_checkpoint`` / ``read_config`` /
  ``load_model_state`` / ``load_optimizer_state`` / ``load_params`` (the read side and the layout);
  :mod:`~ppl_vae.store.commit`: the write side (new set, fsync, rename, one pointer; the fault hook);
  :mod:`~ppl_vae.store.pointer`: a missing or damaged pointer rebuilt from the newest verified set;
  :mod:`~ppl_vae.store.validate`: field-by-field checks of the JSON files read back.
- :mod:`~ppl_vae.store.outputs`: an evaluation's or a comparison's files committed as one set.
- :mod:`~ppl_vae.store.lock`: ``lock_folder`` (one writer per folder, never through a link), ``lock_outputs``;
  :mod:`~ppl_vae.store.files`: strict JSON and atomic files; :mod:`~ppl_vae.store.tracking`: MLflow.

These modules import nothing of ppl_vae but :mod:`ppl_vae.errors` (and, lazily, the model builder to
rebuild a checkpoint's model), so :mod:`ppl_vae.train` uses them and :mod:`ppl_vae.runs`, which drives
training, sits above both.
"""
