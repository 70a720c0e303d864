import pytest
from PIL import Image

from selfsup.cli import main
from selfsup.errors import SelfsupError
from selfsup.eval.plots import plot_reconstructions
from selfsup.train.run import train

VIT = {"img_size": 8, "patch_size": 4, "depth": 1, "embed_dim": 32, "num_heads": 2}


def pretrain(name, tmp_path, **options):
    run = train(name, dict(data="digits", max_steps=2, batch_size=16, num_workers=0, **options),
                out=str(tmp_path / name), progress=False)
    return str(run / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("name, options", [("sit", dict(recon_hidden_dim=16, proj_hidden_dim=16, proj_dim=8)),
                                           ("mae", dict(decoder_dim=16, decoder_depth=1, decoder_heads=2)),
                                           ("simmim", {})])
def test_reconstructions_png_has_three_rows_of_n_images(tmp_path, capsys, name, options):
    checkpoint = pretrain(name, tmp_path, backbone_kwargs=VIT, **options)
    out = tmp_path / f"{name}.png"
    assert main(["plot", "reconstructions", "--checkpoint", checkpoint, "--n", "5", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        width, height = image.size
    assert width > height  # 5 columns, 3 rows


def test_reconstructions_need_a_masked_image_model(tmp_path):
    checkpoint = pretrain("simclr", tmp_path, backbone="resnet10t", backbone_kwargs={"channels": [8, 8, 16, 16]},
                          proj_hidden_dim=16, proj_dim=8)
    with pytest.raises(SelfsupError, match="does not reconstruct images"):
        plot_reconstructions(checkpoint, tmp_path / "x.png")


def test_tsne_of_a_checkpoint_and_of_a_random_encoder(tmp_path, capsys):
    checkpoint = pretrain("mae", tmp_path, backbone_kwargs=VIT, decoder_dim=16, decoder_depth=1, decoder_heads=2)
    for source, extra in ((checkpoint, []), ("random", ["--backbone", "resnet10t", "--backbone-kwargs",
                                                        "{channels: [8, 8, 16, 16]}"])):
        out = tmp_path / "tsne.png"
        assert main(["plot", "tsne", "--checkpoint", source, "--data", "digits", "--n", "200", "--out", str(out),
                     *extra]) == 0
        with Image.open(out) as image:
            assert image.size[0] > 500
        out.unlink()
    assert main(["plot", "tsne", "--checkpoint", str(tmp_path / "missing.ckpt"), "--data", "digits",
                 "--out", str(tmp_path / "t.png")]) != 0
    assert "missing.ckpt" in capsys.readouterr().err
