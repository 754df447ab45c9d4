"""What xgrad knows about each MNIST-format data set: files, digests, mirrors, local copies.

Everything here is data, so tests (and users with their own mirror) can describe a data
set served from anywhere by building a :class:`DatasetSpec` or patching :data:`DATASETS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xgrad.errors import ArgumentError, ArgumentTypeError

__all__ = ["DATASETS", "PARTS", "DataFile", "DatasetSpec", "get_spec"]

# The four files of an MNIST-format data set, in the order load_mnist returns them.
PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class DataFile:
    """One published ``.gz`` file: its name, SHA-256 digest and size in bytes.

    ``sha256``/``size`` describe the file as the mirrors serve it; a download that does not
    match both is discarded. None means unknown (then only the IDX structure is checked).
    """

    name: str
    sha256: str | None = None
    size: int | None = None

    @property
    def stem(self) -> str:
        """The name without ``.gz`` (the uncompressed file's usual name)."""
        return self.name[:-3] if self.name.endswith(".gz") else self.name


@dataclass(frozen=True)
class DatasetSpec:
    """An MNIST-format data set: four IDX files, where to download them, where to look.

    Attributes
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"`` or your own; also the cache sub-directory.
    files : dict
        :data:`PARTS` -> :class:`DataFile`.
    mirrors : tuple of str
        Base URLs tried in order; a file's URL is ``mirror + file.name``.
    system_dirs : tuple of str
        Read-only directories where an OS package installs the files.
    hint : str
        How else to get the data, shown when nothing is found and downloading fails.
    num_classes : int
        Number of classes (10 for MNIST and Fashion-MNIST): labels must be below it, and
        it is the width of one-hot labels and of a net's output layer for this data set.
    """

    name: str
    files: dict[str, DataFile]
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    hint: str = ""
    num_classes: int = 10
    homepage: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        n = self.num_classes
        # IDX labels are uint8: at most 256 classes.
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256:
            raise ArgumentError(f"num_classes: expected an int in [1, 256], found {n!r}")
        if not isinstance(self.files, dict) or set(self.files) != set(PARTS):
            found = sorted(self.files) if isinstance(self.files, dict) else self.files
            raise ArgumentError(f"files: expected a dict with keys {list(PARTS)}, found {found!r}")

    def urls(self, part: str) -> list[str]:
        """Every mirror's URL of one file, in order."""
        name = self.files[part].name
        return [m if m.endswith(name) else m.rstrip("/") + "/" + name for m in self.mirrors]


# Digests: SHA-256 of the .gz files as the mirrors serve them. MNIST: the values published
# by torchvision/TFDS users for the ossci/cvdf mirrors (byte-identical to LeCun's files).
# Fashion-MNIST: Zalando's files (the same bytes on their S3 site and in their GitHub
# repository, MD5s as in their README). The Debian package recompresses the files (its gzip
# headers drop the original file name), so its .gz digests differ; it is read, not verified.
_MNIST = DatasetSpec(
    name="mnist",
    files={
        "train_images": DataFile(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            9912422,
        ),
        "train_labels": DataFile(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            28881,
        ),
        "test_images": DataFile(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            1648877,
        ),
        "test_labels": DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            4542,
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    hint=(
        "MNIST has no OS package, but Fashion-MNIST (same format, same sizes) has: "
        "sudo apt-get install dataset-fashion-mnist, then use dataset='fashion-mnist' "
        "(--dataset fashion-mnist)"
    ),
    homepage="http://yann.lecun.com/exdb/mnist/",
)

_FASHION = DatasetSpec(
    name="fashion-mnist",
    files={
        "train_images": DataFile(
            "train-images-idx3-ubyte.gz",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            26421880,
        ),
        "train_labels": DataFile(
            "train-labels-idx1-ubyte.gz",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            29515,
        ),
        "test_images": DataFile(
            "t10k-images-idx3-ubyte.gz",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            4422102,
        ),
        "test_labels": DataFile(
            "t10k-labels-idx1-ubyte.gz",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            5148,
        ),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    hint="on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist",
    homepage="https://github.com/zalandoresearch/fashion-mnist",
)

DATASETS: dict[str, DatasetSpec] = {"mnist": _MNIST, "fashion-mnist": _FASHION}


def get_spec(dataset: str | DatasetSpec) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``dataset`` (``"mnist"``, ``"fashion-mnist"``).

    >>> get_spec("fashion_mnist").name
    'fashion-mnist'
    """
    if isinstance(dataset, DatasetSpec):
        return dataset
    if not isinstance(dataset, str):
        raise ArgumentTypeError(
            f"dataset: expected a name such as 'mnist' or a DatasetSpec, found {dataset!r}"
        )
    key = dataset.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ArgumentError(
            f"dataset: unknown name {dataset!r}; known: {', '.join(sorted(DATASETS))}"
        )
    return DATASETS[key]
