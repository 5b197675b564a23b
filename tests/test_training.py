"""activevlm.utils.training.train_epochs against a hand-written trace of early stopping."""

from __future__ import annotations

import pytest

from activevlm.utils.training import EarlyStopping, train_epochs


class Counter:
    """A 'model' whose weights are the number of epochs trained; keys come from a script."""

    def __init__(self, keys: list[float]) -> None:
        self.weights, self.keys, self.restored = 0, keys, []

    def run_epoch(self, epoch: int):
        self.weights += 1
        return self.keys[epoch - 1], {"epoch": epoch, "key": self.keys[epoch - 1]}

    def stopping(self, patience: int) -> EarlyStopping:
        def restore(state: int) -> None:
            self.weights = state
            self.restored.append(state)

        return EarlyStopping(lambda: self.weights, restore, patience)


@pytest.mark.parametrize(("keys", "patience", "best", "ran"), [
    ([5, 4, 4, 6, 3, 9], 2, 2, 4),      # ties do not reset patience: stops after epoch 4
    ([5, 4, 4, 6, 3, 9], 3, 5, 6),      # a later improvement wins
    ([5, 6, 7], 1, 1, 2),
    ([3, 2, 1], 1, 3, 3),               # ran out of epochs while improving
])
def test_early_stopping_keeps_the_first_best_epoch(keys, patience, best, ran):
    model = Counter(keys)
    run = train_epochs(model.run_epoch, len(keys), model.stopping(patience), progress=False)
    assert (run.best_epoch, len(run.history), model.weights) == (best, ran, best)
    assert run.best_key == keys[best - 1]
    assert [r["epoch"] for r in run.history] == list(range(1, ran + 1))


def test_the_start_competes_and_can_win():
    model = Counter([2.0, 3.0, 4.0])
    run = train_epochs(model.run_epoch, 3, model.stopping(2), start=(1.0, {"epoch": 0}),
                       progress=False)
    assert (run.best_epoch, model.weights, len(run.history)) == (0, 0, 3)
    assert model.restored == [0]


def test_tuple_keys_break_ties_by_the_second_entry():
    model = Counter([(1.0, -0.5), (1.0, -0.7), (1.0, -0.6)])
    run = train_epochs(model.run_epoch, 3, model.stopping(5), progress=False)
    assert run.best_epoch == 2 and model.weights == 2


def test_without_stopping_every_epoch_runs_and_the_last_is_kept():
    model = Counter([1.0, 5.0, 9.0])
    run = train_epochs(model.run_epoch, 3, None, start=(0.0, {"epoch": 0}), progress=False)
    assert (run.best_epoch, model.weights, len(run.history), model.restored) == (3, 3, 4, [])
