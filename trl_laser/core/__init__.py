"""The self-reward score itself, the bottom layer that every other package builds on (it imports nothing else of
`trl_laser`):

- `self_reward`: the LaSeR math as pure tensor functions (r_s, class weights, the alignment term, advantage mixing,
  per-class metrics, AUROC),
- `readout`: log π(z_c | x, y) from the hidden state of the completion's last token,
- `during_generation`: the same read while `model.generate` samples the completion,
- `token`: choosing and checking the self-reward token z_c,
- `recipe`: the scoring recipe (z_c, β_v, c_ref) saved with a model,
- `model_path`: telling a local model directory from a Hub id.
"""
