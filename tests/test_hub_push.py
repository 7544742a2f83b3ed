import os
from unittest import mock


def test_the_final_push_carries_the_scoring_recipe_and_card(make_trainer, tmp_path, one_thread):
    """hub_strategy="end": only `push_to_hub()` at the end uploads. A stand-in for the Hub client records what it
    uploads (no network)."""
    import transformers.trainer

    uploads = []

    class FakeApi:
        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploads.append((repo_id, sorted(os.listdir(folder_path)), kwargs.get("ignore_patterns")))
            return mock.MagicMock(done=lambda: True)

    trainer = make_trainer(hub_strategy="end", max_steps=1)
    trainer.train()
    trainer.hub_model_id = "someone/tiny-laser"
    with mock.patch.object(transformers.trainer, "hf_api", lambda: FakeApi()):
        trainer.push_to_hub()
    ((repo_id, files, ignored),) = uploads
    assert repo_id == "someone/tiny-laser"
    assert {"self_reward_config.json", "README.md", "config.json", "model.safetensors"} <= set(files)
    from fnmatch import fnmatch

    assert not any(fnmatch(name, pattern) for name in ("self_reward_config.json", "README.md") for pattern in ignored)
    card = open(os.path.join(trainer.args.output_dir, "README.md")).read()
    assert "someone/tiny-laser" in card and "<reserved_0>" in card and "(3)" in card
