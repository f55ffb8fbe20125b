"""Request and response shapes of the JSON API v1, one module per resource.

Input schemas check shapes only: types, lengths, simple patterns (HH:MM, 3-digit codes),
aware date-times in a sane range, no NUL bytes, no unknown fields. The domain's rules
(phone format, unique phone, known time zone, end after start, what a mailing's state
allows) live in ``mailing.services``, which answer with the same 422 shape.
"""
