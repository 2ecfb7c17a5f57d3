"""In-house FID InceptionV3 (metrics/inception.py): structure, outputs, weight loading."""
import pytest
import torch

from ebmlab.metrics import inception as inc


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = inc.InceptionV3()
    with torch.no_grad():  # non-default BatchNorm statistics, so a reload that ignored them would differ
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_parameter_count_and_key_shapes_match_the_fid_weight_file(model):
    # torchvision Inception3: 27,161,264 params; minus the aux head (3,326,696); +8 classes (16,392)
    assert sum(p.numel() for p in model.parameters()) == inc.N_PARAMS == 23_850_960
    sd = model.state_dict()
    assert not any(k.startswith("AuxLogits") for k in sd)
    expect = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_4a_3x3.bn.running_var": (192,),
              "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1), "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
              "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7), "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
              "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1), "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
              "fc.weight": (1008, 2048), "fc.bias": (1008,)}
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k


def test_forward_gives_2048_features_and_1008_logits(model):
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    feats, logits = model(x)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # after ReLU and average pooling
    # unbiased logits (IS convention) differ from the biased ones by exactly the bias
    with torch.no_grad():
        model.fc.bias.fill_(0.25)
        _, biased = model(x, logits_bias=True)
        model.fc.bias.zero_()
    assert torch.allclose(biased - logits, torch.full_like(logits, 0.25), atol=1e-5)


def test_grayscale_any_size_is_resized_to_299_rgb():
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    y = inc.InceptionV3.preprocess(x)
    assert y.shape == (3, 3, 299, 299)
    assert torch.equal(y[:, 0], y[:, 2]) and y.min() >= -1 and y.max() <= 1
    with pytest.raises(ValueError):
        inc.InceptionV3.preprocess(torch.zeros(1, 2, 8, 8))


def test_state_dict_round_trip_through_a_file(model, tmp_path):
    path = tmp_path / inc.FID_WEIGHTS_NAME
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, path)  # without BatchNorm's step counters, as older files may be
    loaded = inc.load_inception(path)
    x = torch.rand(1, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        f1, l1 = model(x)
        f2, l2 = loaded(x)
    assert torch.equal(f1, f2) and torch.equal(l1, l2)


def test_mismatched_state_dict_is_named(tmp_path):
    m = inc.InceptionV3()
    sd = m.state_dict()
    sd["fc.weight"] = torch.zeros(1000, 2048)
    sd["AuxLogits.fc.weight"] = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="AuxLogits.fc.weight.*fc.weight"):
        inc.load_checked(inc.InceptionV3(), sd)


def test_missing_weights_say_where_to_put_them(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(inc.InceptionWeightsMissing, match="checkpoints/pt_inception-2015-12-05-6726825d.pth"):
            inc.find_weights(None)
        with pytest.raises(FileNotFoundError, match="--inception-weights"):
            inc.find_weights(tmp_path / "nope.pth")
        target = tmp_path / "hub" / "checkpoints" / inc.FID_WEIGHTS_NAME
        target.parent.mkdir(parents=True)
        target.write_bytes(b"")
        assert inc.find_weights(None) == target
    finally:
        torch.hub.set_dir(old)


def test_a_damaged_weight_file_is_one_sentence_and_an_ebmlab_error(tmp_path):
    """A truncated download or another file printed torch's many-line unpickling error (found by an audit)."""
    import pickle

    from ebmlab.errors import ConfigError
    for name, content in (("empty.pth", b""), ("text.pth", b"<html>rate limited</html>"),
                          ("object.pth", pickle.dumps({"fc.weight": object}))):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="not a PyTorch weight file of tensors") as err:
            inc.load_inception(path)
        assert "\n" not in str(err.value) and inc.FID_WEIGHTS_URL in str(err.value) and len(str(err.value)) < 600
    assert issubclass(inc.InceptionWeightsMissing, ConfigError) and issubclass(inc.InceptionWeightsMissing,
                                                                               FileNotFoundError)
