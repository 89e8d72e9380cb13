"""`torchlab linreg`: both methods find the line, take the same steps, log, and refuse bad input."""

import json

import pytest

from torchlab.cli import main
from torchlab.engine import NonFiniteLoss
from torchlab.commands.linreg import agreement, fit_manual, fit_module, least_squares, make_problem

pytestmark = pytest.mark.usefixtures("one_thread")
FITS = {"manual": fit_manual, "module": fit_module}


def linreg_json(capsys, *flags) -> dict:
    assert main(["linreg", "--quiet", "--json", "--device", "cpu", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def fit(method, slope=3.0, intercept=0.8, noise=0.05, samples=2000, steps=1000, lr=0.1, seed=0, **kw):
    p = make_problem(samples, slope, intercept, noise, seed)
    return FITS[method](p["x"], p["y"], steps, lr, init=p["init"], truth=(slope, intercept), **kw), p


@pytest.mark.parametrize("method", ["manual", "module"])
def test_defaults_recover_the_line(method, capsys):
    r = linreg_json(capsys, "--method", method)
    assert abs(r["fitted"]["slope"] - 3.0) < 0.01 and abs(r["fitted"]["intercept"] - 0.8) < 0.01
    assert r["fitted"]["slope"] == pytest.approx(r["least_squares"]["slope"], abs=1e-4)
    assert 1 <= r["reached_step"] <= 1000
    assert [h["step"] for h in r["history"]] == list(range(100, 1001, 100))


@pytest.mark.parametrize("method", ["manual", "module"])
@pytest.mark.parametrize("slope, intercept", [(-2.0, 5.0), (0.5, -1.5)])
def test_other_lines(method, slope, intercept):
    r, _ = fit(method, slope, intercept, lr=0.5, steps=300)  # lr 0.5 is still stable here, and quicker
    assert r["slope"] == pytest.approx(slope, abs=0.01) and r["intercept"] == pytest.approx(intercept, abs=0.01)


def test_manual_and_module_take_the_same_steps():
    manual, _ = fit("manual", steps=300, log_every=1)
    module, _ = fit("module", steps=300, log_every=1)
    assert len(manual["history"]) == len(module["history"]) == 300
    for a, b in zip(manual["history"], module["history"]):
        for key in ("loss", "slope", "intercept"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a, b)
    assert manual["reached_step"] == module["reached_step"]


@pytest.mark.parametrize("method", ["manual", "module"])
def test_no_noise_converges_to_the_exact_values(method):
    r, p = fit(method, noise=0.0)
    assert least_squares(p["x"], p["y"]) == pytest.approx((3.0, 0.8), abs=1e-6)  # y itself is float32
    assert r["slope"] == pytest.approx(3.0, abs=1e-4) and r["intercept"] == pytest.approx(0.8, abs=1e-4)
    assert r["final_loss"] < 1e-9


def test_without_zeroing_gradients_the_fit_goes_wrong():
    right, _ = fit("manual", steps=200)
    wrong, _ = fit("manual", steps=200, zero_grads=False)  # every step follows the sum of all past gradients
    assert abs(wrong["slope"] - right["slope"]) > 0.5


def test_reached_step_is_the_first_step_within_tolerance(capsys):
    r, _ = fit("manual", steps=600, log_every=1)
    within = [h["step"] for h in r["history"]
              if abs(h["slope"] - 3.0) <= 0.01 and abs(h["intercept"] - 0.8) <= 0.01]
    assert r["reached_step"] == within[0]
    assert fit("manual", steps=50)[0]["reached_step"] is None
    assert main(["linreg", "--quiet", "--steps", "50", "--device", "cpu"]) == 0
    assert "not reached" in capsys.readouterr().out


def test_tensorboard_has_the_three_tags_apart_from_training_runs(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = linreg_json(capsys, "--steps", "200", "--log-every", "50", "--run-dir", "tb")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    # Not train/loss: a loss of 0.003 must not share a chart with the classifiers' losses of 0.3.
    assert set(events.Tags()["scalars"]) == {"linreg/loss", "linreg/slope", "linreg/intercept"}
    slopes = events.Scalars("linreg/slope")
    assert [e.step for e in slopes] == [50, 100, 150, 200]
    assert slopes[-1].value == pytest.approx(r["fitted"]["slope"])
    assert json.loads((tmp_path / "tb" / "demo.json").read_text())["demo"] == "linreg"  # not a run: see `runs`


def test_module_method_states_that_it_took_the_manual_steps(capsys):
    r = linreg_json(capsys, "--method", "module", "--steps", "300")
    a = r["agreement"]
    assert a["compared_with"] == "manual" and a["steps"] == 300
    assert 0 <= a["max_slope_diff"] <= 1e-5 and 0 <= a["max_intercept_diff"] <= 1e-5
    assert "agreement" not in linreg_json(capsys, "--method", "manual", "--steps", "30")
    assert main(["linreg", "--quiet", "--method", "module", "--steps", "300", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "step for step the same as --method manual: after each of the 300 steps the parameters differ by at " \
           "most" in out and "TensorBoard: torchlab tensorboard runs/linreg-module-" in out


def test_agreement_compares_every_step():
    p = make_problem(200, 3.0, 0.8, 0.05, 0)
    trace = []
    fit_module(p["x"], p["y"], 40, 0.1, init=p["init"], trace=trace)
    assert len(trace) == 40
    same = agreement(p["x"], p["y"], 40, 0.1, p["init"], trace)
    assert max(same["max_slope_diff"], same["max_intercept_diff"]) <= 1e-6
    trace[17] = trace[17] + 0.5  # one step off: the comparison must see it
    assert agreement(p["x"], p["y"], 40, 0.1, p["init"], trace)["max_slope_diff"] == pytest.approx(0.5, abs=1e-5)


def one_line_error(capsys, code, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("torchlab: error: "), err
    for fragment in fragments:
        assert fragment in err[0]


@pytest.mark.parametrize("flags, flag", [
    (["--samples", "1"], "--samples"), (["--steps", "0"], "--steps"), (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"), (["--noise", "-1"], "--noise"), (["--log-every", "0"], "--log-every"),
    (["--tolerance", "0"], "--tolerance"), (["--method", "magic"], "--method"),
])
def test_bad_flags_are_one_line_errors(flags, flag, capsys):
    one_line_error(capsys, main(["linreg", "--quiet", *flags]), flag)


def test_a_run_dir_holding_files_is_refused(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep me")
    one_line_error(capsys, main(["linreg", "--quiet", "--run-dir", "full"]), "--run-dir full: already holds files")


def test_divergence_is_a_one_line_error_and_keeps_the_logs(tmp_path, capsys):
    code = main(["linreg", "--quiet", "--lr", "10", "--steps", "300", "--log-every", "20", "--run-dir", "boom"])
    one_line_error(capsys, code, "diverged", "smaller --lr")
    assert list((tmp_path / "boom").glob("events.out.tfevents.*"))
    with pytest.raises(NonFiniteLoss):
        fit("module", lr=10, steps=100)
