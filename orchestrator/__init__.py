"""arq workers on Redis (`worker`, `recovery`) and the job bodies they run (`jobs`): training,
rendering, transcriptions, webhooks.
"""
