"""The world the study runs in: presets (:mod:`.presets`), the Debian data (:mod:`.data`), the imperfect sources
(:mod:`.sources`), the simulated human (:mod:`.oracle`), π₀ and its SFT (:mod:`.policy`, :mod:`.policy_config`,
:mod:`.sft`, :mod:`.sft_recipe`) and the offline model files (:mod:`.assets`, :mod:`.llm_assets`,
:mod:`.wheel_parts`)."""
