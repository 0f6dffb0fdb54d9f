"""Features: sparse autoencoders (SAEs) on a pLM's hidden states, and the biological concepts they match.

The floor beside `probing` and `causal`: it reads proteins and models, and its outputs go to `report`.

* `plmlens.features.store`: per-residue hidden states of chosen layers, streamed to disk (`extract`) and
  read back memory-mapped (`ActivationStore`).
* `plmlens.features.sae`: the SAE (TopK by default, BatchTopK, ReLU + L1), saved as safetensors + JSON.
* `plmlens.features.train`: its trainer, seeded, checkpointed and resumable.
* `plmlens.features.fidelity`: what the SAE keeps: variance explained, L0, dead and dense latents, and the
  model's loss with the layer replaced by the reconstruction.
* `plmlens.features.concepts`: feature × concept precision, recall and F1 (InterPLM's protocol), against
  single neurons and controls.
"""
