"""Numbers every module agrees on: canvas geometry, classes, box format, file names."""

from pathlib import Path

CANVAS_SIZE = 100  # canvases are CANVAS_SIZE x CANVAS_SIZE, one grey channel, uint8
DIGIT_SIZE = 28  # MNIST digits are 28 x 28
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(i) for i in range(NUM_CLASSES))

# Boxes on disk and in COCO JSON are pixel (x, y, w, h) with (x, y) the top-left corner.
BOX_FORMAT = "xywh"

STAGES = ("stage1", "stage2", "stage3")
SPLITS = ("train", "val", "test")
DRAWN_SPLIT = "drawn"  # re-stroked MNIST test digits laid out as people write (a stage may add it)
CANVAS_SPLITS = (*SPLITS, DRAWN_SPLIT)  # every split a stage can generate; its index seeds the shard

# Repository-relative output folders that dvc.yaml declares as outs.
DATA_DIR = Path("data")
MNIST_OUT = DATA_DIR / "mnist"
CANVAS_OUT = DATA_DIR / "canvases"
MODELS_DIR = Path("models")
TFJS_DIR = MODELS_DIR / "tfjs"  # exported versions (<version>/) and champion.json
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")

DEFAULT_PARAMS_FILE = Path("params.yaml")
DEFAULT_MNIST_DIR = Path("../shared/data/mnist")

# sha256 of the *decompressed* IDX payloads (from the MNIST README): a mirror's gzip bytes may differ.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
