import pytest
import torch
import torch.nn.functional as F

from torchlab.engine import NonFiniteLoss, StopFlag, evaluate, per_class_accuracy, train_one_epoch
from torchlab.runtime import Runtime
from torchlab.models.cnn import NotesCNNConfig, VGGConfig
from torchlab.models.registry import build_model

CPU = Runtime(torch.device("cpu"))


def batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_one_step_matches_a_hand_written_step():
    torch.manual_seed(0)
    model = build_model("notes-cnn", NotesCNNConfig())
    reference = build_model("notes-cnn", NotesCNNConfig())
    reference.load_state_dict(model.state_dict())
    x, y = batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = train_one_epoch(model, [(x, y)], opt, None, CPU)
    loss = F.cross_entropy(reference(x), y)
    loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    assert metrics["steps"] == 1 and metrics["images"] == 32
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["notes-cnn", "vgg-tiny"])
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    model = build_model(name, {})
    x, y = batch(16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        train_one_epoch(model, [(x, y)], opt, None, CPU)
    result = evaluate(model, [(x, y)], CPU, 10)
    assert result["acc"] == 1.0


@pytest.mark.parametrize("n, bs", [(97, 10), (100, 7), (5, 64)])
def test_evaluate_scores_every_sample_once(n, bs):
    torch.manual_seed(0)
    model = build_model("notes-cnn", NotesCNNConfig())
    x, y = batch(n)
    batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, n, bs)]
    result = evaluate(model, batches, CPU, 10)
    logits = model.eval()(x)
    assert result["count"] == n
    assert result["confusion"].sum() == n
    assert result["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-4)


def test_confusion_and_per_class_accuracy():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
        model[1].bias.zero_()
    x = torch.tensor([[1.0, 0], [1, 0], [0, 1], [1, 0]]).view(4, 1, 1, 2)
    y = torch.tensor([0, 0, 1, 1])  # the last one is wrong: true 1, predicted 0
    result = evaluate(model, [(x, y)], CPU, 2)
    assert result["confusion"].tolist() == [[2, 0], [1, 1]]
    assert per_class_accuracy(result["confusion"]) == [1.0, 0.5]


def test_tta_averages_the_mirrored_image():
    torch.manual_seed(0)
    model = build_model("vgg-tiny", VGGConfig(widths=(8, 16)))
    x, y = batch(8)
    plain = evaluate(model, [(x, y)], CPU, 10)
    sym = evaluate(model, [(torch.cat([x, x.flip(3)]), torch.cat([y, y]))], CPU, 10, tta=True)
    both = evaluate(model, [(x.flip(3), y)], CPU, 10, tta=True)
    assert sym["count"] == 16 and plain["count"] == 8
    # TTA is symmetric: an image and its mirror get the same prediction.
    assert torch.equal(sym["confusion"], 2 * both["confusion"])


def test_non_finite_loss_names_the_first_bad_step():
    torch.manual_seed(0)
    model = build_model("notes-cnn", NotesCNNConfig())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    good = [batch(8, s) for s in range(3)]
    bad_x = good[0][0].clone()
    bad_x[0, 0, 0, 0] = float("nan")
    batches = good + [(bad_x, good[0][1])] + good
    with pytest.raises(NonFiniteLoss) as e:
        train_one_epoch(model, batches, opt, None, CPU, global_step=10, log_every=50)
    assert e.value.step == 14  # global steps 11..13 were fine


def test_stop_flag_and_max_steps_stop_between_steps():
    torch.manual_seed(0)
    model = build_model("notes-cnn", NotesCNNConfig())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = [batch(4, s) for s in range(6)]
    m = train_one_epoch(model, batches, opt, None, CPU, global_step=5, max_steps=8)
    assert m["steps"] == 3 and m["stopped"]
    flag = StopFlag()
    flag.requested = True
    m = train_one_epoch(model, batches, opt, None, CPU, stop=flag)
    assert m["steps"] == 0 and m["stopped"]


def test_on_log_every_n_steps():
    torch.manual_seed(0)
    model = build_model("notes-cnn", NotesCNNConfig())
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []
    train_one_epoch(model, [batch(4, s) for s in range(7)], opt, None, CPU, log_every=3,
                    on_log=lambda step, loss, lr, images: seen.append((step, lr, images)))
    assert seen == [(3, 0.01, 12), (6, 0.01, 24)]


def test_translate_matches_torchvision_edge_padding_and_crop():
    from torchvision.transforms.v2 import functional as TF

    from torchlab.engine import translate

    x = torch.randn(3, 2, 9, 7)
    for dy, dx in ((1, 1), (-1, -1), (2, -1), (0, 3)):
        p = max(abs(dy), abs(dx))
        reference = TF.crop(TF.pad(x, [p], padding_mode="edge"), p - dy, p - dx, 9, 7)
        assert torch.equal(translate(x, dy, dx), reference)
    assert torch.equal(translate(x, 1, 1)[..., 1:, 1:], x[..., :-1, :-1])  # moved down-right by one


def test_shift_tta_weighs_the_image_half_and_each_shifted_copy_a_quarter():
    from torchlab.engine import predict_logprobs, translate

    torch.manual_seed(0)
    model = build_model("vgg-tiny", VGGConfig(widths=(8, 16))).eval()
    x, _ = batch(4)
    p = lambda images: model(images).softmax(1)
    with torch.inference_mode():
        expected = p(x) / 2 + (p(translate(x, 1, 1)) + p(translate(x, -1, -1))) / 4
        assert torch.allclose(predict_logprobs(model, x, CPU, shift=1).exp(), expected, atol=1e-6)
        assert torch.allclose(predict_logprobs(model, x, CPU).exp(), p(x), atol=1e-6)
