"""Datasets for surgical activity recognition and segmentation; ROS-free.

Every reader yields the same `Sample` (RGB uint8 image, uint8 class-id mask with 255 = ignore,
activity index, id, source path) and describes its labels with a `ClassInfo`. Modules:

- `classes`: `ClassInfo` (activity names, segmentation names and colours), the MTLESD and
  MTLEndovis label sets.
- `dataset`: `Sample`, `DatasetError`, and `ActivitySegmentationDataset`, the torch `Dataset`
  interface every reader implements.
- `image_io`: reading and writing images and masks, with errors that name the file.
- `official`: the official EndoARSS layout (MTLESD, MTLEndovis).
- `generic`: the documented generic layout (README.md in this folder), reader and writer.
- `synthetic`: procedural endoscopic scenes with pixel and activity labels, and the
  `endoarss synth` command.
- `preprocessing`: the resize and normalisation shared by the Predictor, evaluation and
  validation (antialiased bilinear images, exact pixel-centre nearest masks).
- `transforms`: joint image/mask augmentation and the evaluation transform (torchvision v2).
- `corruptions`: ImageNet-C style corruptions plus smoke and bleeding, for robustness tests.
- `procedural`: fractal noise shared by the scene generator and the corruptions.

Nothing is imported here, so that using one module does not pay for the others (PyTorch takes
seconds to import).
"""
