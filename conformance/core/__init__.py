"""The operator-neutral vocabulary every part of the suite speaks: dtypes (:mod:`.dtypes`), a layer's state
as named fields (:mod:`.state`), comparisons against an expected value within a tolerance
(:mod:`.comparison`) and seeded case records (:mod:`.case`). Nothing here knows an operator."""
