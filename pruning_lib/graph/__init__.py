"""Analyse: the model's data flow (`trace`), what each layer type and function does to channels (`layer_types`,
`functions`), and the channel groups every other part of the method reads (`groups`)."""
