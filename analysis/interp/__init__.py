"""Auto-interpretation of SAE latents: an explanation per latent from its contexts (``sae explain``) and scores of
those explanations on held-out contexts (``sae score``), as delphi and OpenAI's automated-interpretability do."""
