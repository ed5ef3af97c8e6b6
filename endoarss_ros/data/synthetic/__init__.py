"""Synthetic endoscopic scenes with pixel labels and an activity that follows from the scene.

- `scene`: the scene state, label sets (`SYNTHETIC_CLASSES`) and the activity rule.
- `sampling`: random single-frame scenes for a wanted activity, with distractors.
- `clips`: consecutive frames with activity segments and smooth motion.
- `tissue`, `painter`, `render`: drawing a scene into an RGB frame and its mask.
- `dataset`: `SyntheticDataset`, frames generated on demand, and `generate_frame`.
- `writer`, `command`: writing the generic layout; the `endoarss synth` subcommand.
"""
