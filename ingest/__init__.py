"""Models and corpora (text, images) into activation datasets: model loading, hook points, inputs, the
modality pipeline (plan, prepare, forward), the Ray actor and driver, and imports of features made elsewhere."""
