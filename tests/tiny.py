"""The tiny world and model the training tests share (seconds per fit; one place to change them)."""

TINY_SIM = {"n_users": 60, "n_videos": 80, "n_categories": 5, "n_authors": 10}
TINY_MODEL = {
    "embedding_dim": 4,
    "shallow_units": [16],
    "n_experts": 2,
    "n_shared_experts": 1,
    "expert_units": 8,
    "tower_units": 4,
}
