"""Settings shared by the text domain tests (a module of its own: test files must not import
`conftest`, whose module name is shared by every test folder)."""

TINY = ["model.hidden=16", "model.layers=1", "model.heads=2", "model.intermediate=32",
        "data.seq_len=32", "data.batch_size=4", "data.test_works=[work_3]",
        "data.val_works=[work_2]", "trainer.progress_bar=false", "sample.steps=4",
        "process.steps=4", "sample.batch_size=4", "optim.warmup_steps=1"]
