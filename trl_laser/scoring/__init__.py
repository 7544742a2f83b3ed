"""Reading the self-reward score: the last-token readout, the choice of z_c, the scoring recipe, and the scorer (which
is also the generator of evaluation and self-correction)."""
