"""The researcher's table: bicubic, every released authors' model, ours and any other method.

Every SRCNN model is run by the authors' protocol
(:func:`srcnn_theano.evaluation.protocol.evaluate_image`'s steps: ground
truth modcropped, MATLAB bicubic degradation, or the dataset's own LR files
with ``use_lr``), on every set (:mod:`srcnn_theano.evaluation.datasets`: any of
the three layouts), at every scale. Other methods' results are read from
``DIR/<dataset>/x<scale>/`` and paired with the ground truth by name
(:mod:`srcnn_theano.evaluation.pairing`). All are scored by one protocol
(:mod:`srcnn_theano.evaluation.score`):

* ``matlab``: SRCNN's and bicubic's scores are ``evaluate``'s (their Y
  straight from the network, as the authors' code); other methods' images
  are read and scored on their Y.
* ``basicsr`` / ``rgb``: SRCNN's and bicubic's colour images
  (:func:`~srcnn_theano.evaluation.protocol.sr_images`) are scored like any
  method's, against the ground truth modcropped to their size (what
  BasicSR's test datasets do to the GT before ``calculate_psnr``).

:func:`summarise` adds, for every method but the baseline, the mean
per-image PSNR difference to the baseline with a seeded paired bootstrap
95% interval (:mod:`srcnn_theano.evaluation.statistics`). Outputs
(:func:`write_benchmark`, :mod:`srcnn_theano.apps.tables`):
``benchmark.md``, ``benchmark.csv``, ``benchmark.tex``,
``benchmark_images.csv`` and the forest plot ``benchmark.png``
(:func:`srcnn_theano.apps.plots.forest_png`).
"""
import collections
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from srcnn_theano.apps import tables
from srcnn_theano.cores import short_idle_spin
from srcnn_theano.errors import SRCNNError
from srcnn_theano.evaluation.datasets import find_datasets
from srcnn_theano.evaluation.pairing import pair
from srcnn_theano.evaluation.protocol import network_input, sr_images, srcnn_scores
from srcnn_theano.evaluation.score import PROTOCOLS, score_images
from srcnn_theano.evaluation.statistics import RESAMPLES, SEED, paired_bootstrap
from srcnn_theano.files import atomic_write_bytes, check_outputs, check_writable_folder
from srcnn_theano.image.imresize import modcrop
from srcnn_theano.image.io import list_images, read_image
from srcnn_theano.image.units import from_float
from srcnn_theano.network.inference import Predictor
from srcnn_theano.network.weights import load, load_default, pretrained_path

OURS = "ours 9-1-5 (T91)"
short_idle_spin()  # idle BLAS/OpenMP threads would hold the core the scorer thread needs


def note(message):
    print(f"note: {message}", file=sys.stderr)


def authors_models(authors_dir, scale, archs=None):
    """``[(column name, path)]``: every ``<arch>/x<scale>.mat`` in the authors' model folder.

    Parameters
    ----------
    authors_dir : str
        ``SRCNN_v1/model``, holding ``9-1-5(91 images)/``, ``9-5-5(ImageNet)/`` ...
    scale : int
    archs : list of str or None
        Only these architecture folders (``None``: all), by name.
    """
    if not os.path.isdir(authors_dir):
        raise SRCNNError(f"--authors-models: not a folder: {authors_dir}")
    found = []
    for arch in sorted(os.listdir(authors_dir)):
        path = os.path.join(authors_dir, arch, f"x{scale}.mat")
        if (archs is None or arch in archs) and os.path.isfile(path):
            found.append((f"authors {arch}", path))
    return found


def parse_method(spec):
    """``'NAME=DIR'`` -> ``(NAME, DIR)`` (``--method``)."""
    name, sep, folder = spec.partition("=")
    if not sep or not name or not folder:
        raise SRCNNError(f"--method wants NAME=DIR, not {spec!r}")
    if not os.path.isdir(folder):
        raise SRCNNError(f"--method {name}: not a folder: {folder}")
    return name, folder


def _identity(y):
    """The 'network' of the bicubic column: its input, unchanged."""
    return y


#: SR images waiting to be scored while the network runs on the next ones.
PENDING = 4


class _Scorer:
    """A one-thread pool that scores SR images while the caller runs the network on the
    next ones (across methods and sets: the network never waits for a set's last scores),
    at most :data:`PENDING` waiting; :meth:`rows` gives every row in submission order."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(1)   # one thread for the whole run: one malloc arena
        self._items, self._waiting = [], collections.deque()

    def submit(self, fn, *args):
        while len(self._waiting) >= PENDING:
            self._waiting.popleft().result()
        future = self._pool.submit(fn, *args)
        self._items.append(future)
        self._waiting.append(future)

    def add(self, rows):
        """Rows made in this thread, in their place among the scored ones."""
        self._items.append(rows)

    def rows(self):
        return [r for item in self._items for r in (item if isinstance(item, list) else item.result())]

    def close(self):
        self._pool.shutdown()


def _score_srcnn(img, name, gt8, bic, sr, lr, scale, method, protocols, dataset, border):
    """The rows of one SR Y image (float (H, W)) under every protocol."""
    rows = []
    colour = sr_images(img, scale, bic, sr, lr, border) if any(p != "matlab" for p in protocols) else None
    for protocol in protocols:
        if protocol == "matlab":
            r = srcnn_scores(gt8, from_float(sr), scale)
            s = {"psnr": r["srcnn_psnr"], "ssim": r["srcnn_ssim"]}
        else:
            s = score_images(modcrop(img, scale), colour["srcnn"], scale, protocol,
                             hr_name=name, sr_name=f"{method} result for {name}")
        rows.append(dict(protocol=protocol, dataset=dataset, scale=scale, method=method,
                         image=name, **s))
    return rows


def _srcnn_rows(images, inputs, scale, predictor, method, lrs, protocols, dataset, border, scorer):
    """Run ``predictor`` on each image's bicubic Y (``inputs``: ``(gt8, bic)`` per image) in
    this thread and hand each result to ``scorer`` (:class:`_Scorer`)."""
    for (name, img), (_, lr), (gt8, bic) in zip(images, lrs, inputs):
        scorer.submit(_score_srcnn, img, name, gt8, bic, predictor(bic), lr, scale, method,
                      protocols, dataset, border)


def _method_rows(images, sr_paths, scale, method, protocols, dataset):
    rows = []
    for (name, img), sr_path in zip(images, sr_paths):
        sr = read_image(sr_path)
        for protocol in protocols:
            hr = modcrop(img, scale) if protocol == "basicsr" else img
            s = score_images(hr, sr, scale, protocol, hr_name=name, sr_name=sr_path)
            rows.append(dict(protocol=protocol, dataset=dataset, scale=scale, method=method,
                             image=name, **s))
    return rows


def run_benchmark(data_dirs, scales=(2, 3, 4), authors_dir=None, progress=True, protocols=("matlab",),
                  methods=(), use_lr=False, archs=None, ours=True, imresize_border="symmetric"):
    """Score everything; returns the per-image rows.

    Parameters
    ----------
    data_dirs : list of str
        Sets or folders of sets (:func:`srcnn_theano.evaluation.datasets.find_datasets`).
    scales : list of int
    authors_dir : str or None
        The authors' ``SRCNN_v1/model`` folder: every model found at a scale is a column.
    progress : bool
        A line on stderr per set, scale and method.
    protocols : list of str
        Of :data:`srcnn_theano.evaluation.score.PROTOCOLS`; the images are
        made once and scored under each.
    methods : list of (str, str)
        ``(name, DIR)``: results in ``DIR/<dataset>/x<scale>/``.
    use_lr : bool
        Enlarge the LR images the sets ship (SelfExSR ``*_LR``, EDSR
        ``LR_bicubic/X<s>``) instead of degrading the ground truth.
    archs : list of str or None
        Only these authors' architectures.
    ours : bool
        Include the shipped models.
    imresize_border : {'symmetric', 'replicate'}
        MATLAB ``imresize``'s border rule for the bicubic images
        (:mod:`srcnn_theano.evaluation.protocol`): ``replicate`` is how the
        published tables were made.

    Returns
    -------
    list of dict ``{protocol, dataset, scale, method, image, psnr, ssim}``
    (PSNR in dB; ``image`` is the ground-truth file's name).
    """
    for p in protocols:
        if p not in PROTOCOLS:
            raise SRCNNError(f"unknown protocol {p!r}; protocols: {', '.join(PROTOCOLS)}")
    datasets = [d for folder in data_dirs for d in find_datasets(folder)]
    names = [d.name for d in datasets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SRCNNError(f"two sets are named {dup[0]}: rename one (results are found by set name)")
    used, scorer = set(), _Scorer()
    try:
        for scale in scales:
            models = authors_models(authors_dir, scale, archs) if authors_dir else []
            if ours and os.path.isfile(pretrained_path(scale)):
                models.append((OURS, None))
            if ours and not models and not methods:
                raise SRCNNError(f"no model for x{scale}: no shipped weights and no --authors-models")
            for ds in datasets:
                if not ds.has_scale(scale):
                    note(f"{ds.name} has no x{scale} ground truth ({ds.root}); skipped")
                    continue
                hr_paths = ds.hr_paths(scale)
                lrs = [(None, None)] * len(hr_paths)
                if use_lr:
                    lr_paths = ds.lr_paths(scale)
                    if not lr_paths:
                        note(f"{ds.name} has no x{scale} LR images ({ds.root}); skipped")
                        continue
                    lrs = [(p, read_image(p)) for p in pair(hr_paths, lr_paths, "LR", ds.lr_folder(scale))]
                images = [(os.path.basename(p), read_image(p)) for p in hr_paths]
                inputs = []
                for (name, img), (lr_name, lr) in zip(images, lrs):
                    y, bic = network_input(img, scale, name, lr, lr_name, imresize_border)
                    inputs.append((from_float(y), bic))
                for method, path in [("bicubic", "")] + models:
                    if progress:
                        print(f"benchmark {ds.name} x{scale}: {method}", file=sys.stderr)
                    weights = None if method == "bicubic" else load_default(scale) if path is None else load(path)
                    predictor = _identity if weights is None else Predictor(weights)
                    _srcnn_rows(images, inputs, scale, predictor, method, lrs, protocols,
                                ds.name, imresize_border, scorer)
                for method, root in methods:
                    folder = os.path.join(root, ds.name, f"x{scale}")
                    if not os.path.isdir(folder):
                        note(f"{method}: no {folder}; its {ds.name} x{scale} cell is empty")
                        continue
                    used.add(method)
                    if progress:
                        print(f"benchmark {ds.name} x{scale}: {method} ({folder})", file=sys.stderr)
                    sr_paths = pair(hr_paths, list_images(folder), "SR", folder)
                    scorer.add(_method_rows(images, sr_paths, scale, method, protocols, ds.name))
        rows = scorer.rows()
    finally:
        scorer.close()
    for method, root in methods:
        if method not in used:
            raise SRCNNError(f"--method {method}: no results in {root} (expected {root}/<dataset>/"
                             f"x<scale>/ for {', '.join(names)} at x{', x'.join(map(str, scales))})")
    return rows


def _ordered(values):
    return list(dict.fromkeys(values))


def summarise(image_rows, baseline="bicubic", resamples=RESAMPLES, seed=SEED):
    """Means per (protocol, dataset, scale, method), with the PSNR difference to ``baseline``.

    Parameters
    ----------
    image_rows : list of dict
        ``{protocol, dataset, scale, method, image, psnr, ssim}`` per image.
    baseline : str
        The method every other one is compared with (paired by image).
    resamples, seed : int
        Of the paired bootstrap (:func:`srcnn_theano.evaluation.statistics.paired_bootstrap`).

    Returns
    -------
    list of dict with :data:`SUMMARY_FIELDS`; ``delta_psnr``, ``ci_low`` and
    ``ci_high`` are ``None`` for the baseline and where it was not scored.

    Raises
    ------
    SRCNNError
        ``baseline`` is none of the methods.
    """
    if resamples < 1:
        raise SRCNNError(f"--resamples must be >= 1, not {resamples}")
    methods = _ordered(r["method"] for r in image_rows)
    if baseline not in methods:
        raise SRCNNError(f"--baseline {baseline!r} is not in the table; methods: {', '.join(methods)}")
    cells = {}
    for r in image_rows:
        cells.setdefault((r["protocol"], r["dataset"], r["scale"], r["method"]), {})[r["image"]] = r
    out = []
    for (protocol, dataset, scale, method), per_image in cells.items():
        psnrs = [r["psnr"] for r in per_image.values()]
        row = dict(dataset=dataset, scale=scale, method=method, protocol=protocol, images=len(psnrs),
                   psnr=sum(psnrs) / len(psnrs),
                   ssim=sum(r["ssim"] for r in per_image.values()) / len(psnrs),
                   delta_psnr=None, ci_low=None, ci_high=None)
        base = cells.get((protocol, dataset, scale, baseline))
        if method != baseline and base is not None:
            names = [n for n in per_image if n in base]
            if len(names) != len(per_image) or len(names) != len(base):
                raise SRCNNError(f"{method} and {baseline} were scored on different images of "
                                 f"{dataset} x{scale}")
            row["delta_psnr"], row["ci_low"], row["ci_high"] = paired_bootstrap(
                [per_image[n]["psnr"] for n in names], [base[n]["psnr"] for n in names],
                resamples, seed)
        out.append(row)
    return out


OUTPUT_FILES = ("benchmark.md", "benchmark.csv", "benchmark.tex", "benchmark_images.csv")
PLOT_FILE = "benchmark.png"   #: the forest plot, written beside the tables unless ``plot=False``


def output_paths(out_dir, force=False, plot=True):
    """The files :func:`write_benchmark` writes in ``out_dir``, checked by the outputs rule
    (:func:`srcnn_theano.files.check_outputs`): call it before the work. Creates nothing.
    With ``plot``, the last one is :data:`PLOT_FILE`."""
    names = OUTPUT_FILES + ((PLOT_FILE,) if plot else ())
    paths = [os.path.join(out_dir, name) for name in names]
    if os.path.isdir(out_dir):
        check_outputs(paths, force=force)
    else:
        check_writable_folder(os.path.dirname(os.path.abspath(out_dir)))
    return paths


def write_benchmark(image_rows, out_dir, protocol="matlab", baseline="bicubic", resamples=RESAMPLES,
                    seed=SEED, force=False, plot=True):
    """Write the tables of one protocol into ``out_dir``; returns ``(summary rows, paths)``.

    Files: :data:`OUTPUT_FILES` (:mod:`srcnn_theano.apps.tables`) and, with
    ``plot``, :data:`PLOT_FILE`: the forest plot of every method's PSNR
    gain over ``baseline`` with its interval
    (:func:`srcnn_theano.apps.plots.forest_png`; left out, with a note,
    when no method but the baseline was scored). Each is written
    atomically; existing ones only with ``force``. Without it each is
    published exclusively (:func:`srcnn_theano.files.publish`): when another
    process wrote one meanwhile, :class:`~srcnn_theano.errors.OutputExistsError`
    (``benchmark.md`` comes first, so that process keeps all four).
    """
    mine = [r for r in image_rows if r["protocol"] == protocol]
    summary = summarise(mine, baseline, resamples, seed)
    paths = output_paths(out_dir, force, plot)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise SRCNNError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    texts = (tables.to_markdown(summary, protocol, baseline, resamples, seed),
             tables.to_csv(summary), tables.to_tex(summary, protocol), tables.images_csv(mine))
    for path, text in zip(paths, texts):
        atomic_write_bytes(path, text.encode(), replace=force)
    if plot:
        if any(r["delta_psnr"] is not None for r in summary):
            from srcnn_theano.apps.plots import forest_png

            png = forest_png(summary, baseline, title=f"PSNR gain over {baseline} with its paired "
                                                      f"bootstrap 95% interval (protocol {protocol})")
            atomic_write_bytes(paths[-1], png, replace=force)
        else:
            note(f"no {PLOT_FILE}: no method but {baseline} was scored")
            paths = paths[:-1]
    return summary, paths
