"""ml-queue tasks: thin wrappers over apps.ml.inference (torch is imported only when they run, so
the other workers, which import every app's tasks module, never load it)."""

from project.queues import Queue, TaskName, custos_task


@custos_task(name=TaskName.ML_ADVISE_ALL, queue=Queue.ML)
def advise_all(self) -> int:
    from apps.ml import inference

    return len(inference.advise_all())


@custos_task(name=TaskName.ML_ADVISE_PAIR, queue=Queue.ML)
def advise_pair(self, token_id: int, quote_token_id: int | None = None) -> list[int]:
    """On demand: fresh advice for one pair from every active model; returns the advice ids."""
    from apps.ml import inference, selectors

    return [
        inference.advise_pair(
            version=version,
            token_id=int(token_id),
            quote_token_id=int(quote_token_id) if quote_token_id is not None else None,
        ).pk
        for version in selectors.active_model_versions()
    ]
