"""Generating with the self-reward: the scorer (which is also the generator of evaluation and self-correction), the
free verifiers read during the same generation (`confidence`), and measuring c_ref (`reference_constant`)."""
