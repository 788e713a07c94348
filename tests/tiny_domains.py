"""Every built-in domain at tiny size on tiny local data, for tests that run all of them (mixed
precision, the GPU benchmark script): `tiny_domain(name, folder)` builds the domain's data in
`folder` (never the network, never the real data cache) and returns the `key=value` overrides
that train it there in seconds. The data are the kinds the domain tests use: RDKit-embedded
molecules written as XYZ files, scikit-image photographs, a few verses, fake MNIST digits and
a few sentences synthesised by flite."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DOMAINS = ("audio", "image", "text", "molecules", "digits")

# a few steps of everything, one validation batch, one checkpoint at the end
COMMON = ["trainer.progress_bar=false", "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
          "sample.val_n=2", "sample.n=2", "sample.eval_n=2", "sample.steps=2",
          "data.num_workers=0"]

MOLECULES = ["C", "O", "N", "CO", "CC", "CN", "C=O", "CF", "C#N", "OCO", "CCO", "NC=O"]
VERSES = [
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n",
    "When, in disgrace with fortune and men's eyes,\nI all alone beweep my outcast state,\n",
    "Let me not to the marriage of true minds\nAdmit impediments. Love is not love\n",
    "Like as the waves make towards the pebbled shore,\nSo do our minutes hasten to their end;\n",
]
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore every morning.",
    "A gentle breeze carried the smell of rain across the field.",
    "Please remember to close the window before you leave.",
    "The old clock in the hall struck twelve at midnight.",
    "We walked along the river until the sun went down.",
    "Bright lights flickered in the windows of the tall houses.",
    "He opened the letter slowly and read it twice.",
]


def tiny_domain(name: str, folder: Path) -> list[str]:
    """Build domain `name`'s tiny data under `folder`; its tiny-size training overrides."""
    folder = Path(folder) / name
    folder.mkdir(parents=True, exist_ok=True)
    return [*COMMON, *BUILDERS[name](folder)]


def _molecules(folder: Path) -> list[str]:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from diffusekit.domains.molecules.structures import Structure, write_xyz

    structures = []
    for k, smiles in enumerate(MOLECULES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=k)
        structures.append(Structure(tuple(a.GetSymbol() for a in mol.GetAtoms()),
                                    np.asarray(mol.GetConformer().GetPositions())))
    write_xyz(structures, folder / "molecules.xyz")
    return [f"data.source={folder}", "data.batch_size=4", "network.hidden=16",
            "network.n_layers=2", "sample.batch_size=4"]


def _image(folder: Path) -> list[str]:
    import skimage.data
    from PIL import Image

    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"):
        Image.fromarray(np.asarray(getattr(skimage.data, name)())[100:196, 100:212]).save(
            folder / f"{name}.png")
    return [f"data.folder={folder}", "data.folder_holdout=0.4", "network.channels=8",
            "network.mults=[1,2]", "network.blocks=1", "data.patch_size=32", "data.batch_size=4",
            "data.val_patches=2", "data.test_crop=64", "process.tile=32",
            "process.tile_overlap=8"]


def _text(folder: Path) -> list[str]:
    corpus = folder / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, verse in enumerate(VERSES):
        (corpus / f"work_{i}.txt").write_text(verse * 12)
    return [f"data.source={corpus}", f"data.cache_dir={folder / 'cache'}", "model.hidden=16",
            "model.layers=1", "model.heads=2", "model.intermediate=32", "data.seq_len=32",
            "data.batch_size=4", "data.test_works=[work_3]", "data.val_works=[work_2]",
            "process.steps=2", "sample.batch_size=4"]


def _digits(folder: Path) -> list[str]:
    from diffusekit.domains.digits.data import DigitSet, write_cache

    rng = np.random.default_rng(0)
    images, labels = [], []
    for k in range(10):  # class k: a bright square at its own place, on faint noise
        x = rng.integers(0, 40, size=(6, 28, 28))
        r, c = 4 + 12 * (k // 5), 2 + 5 * (k % 5)
        x[:, r:r + 4, c:c + 4] = 250
        images.append(x.astype(np.uint8))
        labels.append(np.full(6, k, dtype=np.int64))
    cache = write_cache(DigitSet(np.concatenate(images), np.concatenate(labels),
                                 [str(k) for k in range(10)]), folder / "mnist.npz")
    return [f"data.cache_file={cache}", "network.channels=8", "network.mults=[1,2]",
            "data.batch_size=8", "sample.batch_size=8", "data.test_fraction=0.2",
            "data.val_fraction=0.2"]


def _audio(folder: Path) -> list[str]:
    from diffusekit.core.app import config
    from diffusekit.core.app.training.models import installed_domain
    from diffusekit.domains.audio.data import prepare_corpus

    overrides = [f"data.cache_dir={folder}", "data.n_train=4", "data.n_val=2", "data.n_test=2",
                 "data.workers=1", "data.real_clips=false", "data.packages=[]",
                 "data.train_voices=[flite:kal16,flite:awb]", "data.test_voices=[flite:slt]",
                 "data.frames=32", "data.eval_frames=64", "data.batch_size=2",
                 "network.channels=[8,16]", "network.emb_dim=16", "sample.batch_size=2",
                 "outputs.write_n=2"]
    domain = installed_domain("audio")
    prepare_corpus(config.compose(domain.default_config(), domain="audio", overrides=overrides),
                   sentences=SENTENCES, progress=False)
    return overrides


BUILDERS = {"audio": _audio, "image": _image, "text": _text, "molecules": _molecules,
            "digits": _digits}
