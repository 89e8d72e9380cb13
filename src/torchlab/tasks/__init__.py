"""Tasks wire data, model and engine together for one kind of job."""
