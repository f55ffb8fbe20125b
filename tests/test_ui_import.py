"""CSV import of clients: the files people have, a preview before anything is written, an
update choice, a q2 job with live progress, errors capped on the page and downloadable,
and bounded uploads (size limit; blank lines count toward the row cap)."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import reverse

from mailing import imports, services
from mailing.models import Client, ClientImport, ClientImportError
from mailing.rules import IMPORT_ERRORS_SHOWN, ImportStatus
from tests import test_ui_clients
from tests.conftest import make_clients
from tests.test_ui import post

IMPORT = reverse("dashboard:client_import")


web = test_ui_clients.web  # a signed-in staff member's browser (CSRF enforced)


@pytest.fixture
def q2_in_process(monkeypatch, django_capture_on_commit_callbacks):
    """q2 runs each queued task at once in this process (its sync mode: the same worker
    code, the same task path), when the transaction that queued it commits."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    return lambda: django_capture_on_commit_callbacks(execute=True)


def upload(data: bytes | str, name: str = "clients.csv") -> SimpleUploadedFile:
    raw = data.encode() if isinstance(data, str) else data
    return SimpleUploadedFile(name, raw, content_type="text/csv")


def check_file(web, q2_in_process, data, name="clients.csv") -> ClientImport:
    with q2_in_process():
        response = post(web, IMPORT, {"file": upload(data, name)}, page=IMPORT)
    assert response.status_code == 302, response.content.decode()[:2000]
    record = ClientImport.objects.get()
    assert response["Location"] == reverse("dashboard:client_import_detail", args=[record.pk])
    return record


def confirm(web, q2_in_process, record, update=False):
    url = reverse("dashboard:client_import_confirm", args=[record.pk])
    data = {"update_existing": "on"} if update else {}
    with q2_in_process():
        response = post(web, url, data, page=IMPORT)
    assert response.status_code == 302
    record.refresh_from_db()
    return record


RUSSIAN_EXCEL = (
    "phone;timezone;tag;operator_code\r\n"
    "+7 916 111-11-11;Europe/Moscow;постоянный;\r\n"
    "8 (916) 222-22-22;Asia/Vladivostok;;\r\n"
    "7916;Europe/Moscow;;\r\n"
    "\r\n"
    "79163333333;Europe/Moscow;новый;999\r\n"
).encode("cp1251")


def test_a_semicolon_windows_1251_file_is_previewed_then_imported(web, q2_in_process):
    record = check_file(web, q2_in_process, RUSSIAN_EXCEL)
    record.refresh_from_db()
    assert record.status == ImportStatus.CHECKED
    assert (record.encoding, record.delimiter) == ("Windows-1251", "semicolon")
    assert record.columns == ["phone", "timezone", "tag", "operator_code"]
    assert (record.rows, record.new, record.existing, record.invalid) == (4, 3, 0, 1)
    assert Client.objects.count() == 0  # checked, nothing written
    page = web.get(reverse("dashboard:client_import_detail", args=[record.pk])).content.decode()
    assert "Check before importing" in page and "постоянный" in page
    assert "phone: Phone must be" in page  # line 4's reason, in the preview
    assert "hx-trigger" not in page  # nothing is working: no polling
    record = confirm(web, q2_in_process, record)
    assert record.status == ImportStatus.DONE
    assert (record.created, record.updated, record.invalid) == (3, 0, 1)
    assert set(Client.objects.values_list("phone", "tag", "operator_code")) == {
        ("79161111111", "постоянный", "916"),
        ("79162222222", "", "916"),
        ("79163333333", "новый", "999"),
    }
    assert list(ClientImportError.objects.values_list("line", "phone")) == [(4, "7916")]
    assert record.data == b""  # the file is not kept once imported


@pytest.mark.parametrize(
    ("data", "encoding", "delimiter"),
    [
        (b"\xef\xbb\xbfphone,timezone\n79161234567,Europe/Moscow\n", "UTF-8", "comma"),
        ("phone\ttimezone\n79161234567\tEurope/Moscow\n".encode("utf-16"), "UTF-16", "tab"),
        (b"Phone;Time zone\n79161234567;Europe/Moscow\n", "UTF-8", "semicolon"),
        (b"phone,timezone\n79161234567,Europe/Moscow", "UTF-8", "comma"),
    ],
)
def test_encodings_and_delimiters_are_detected(data, encoding, delimiter, db):
    result = imports.process(data, write=False)
    assert (result.file_error, result.encoding, result.delimiter) == ("", encoding, delimiter)
    assert (result.rows, result.new) == (1, 1)


def test_existing_clients_are_skipped_or_updated_as_chosen(web, q2_in_process):
    services.create_client(phone="79161111111", timezone="Europe/Moscow", tag="old")
    body = "phone,timezone,tag\n79161111111,Asia/Omsk,gold\n79162222222,Europe/Moscow,\n"
    record = check_file(web, q2_in_process, body)
    record.refresh_from_db()
    assert (record.new, record.existing) == (1, 1)
    page = web.get(reverse("dashboard:client_import_detail", args=[record.pk])).content.decode()
    assert 'name="update_existing"' in page
    confirm(web, q2_in_process, record, update=True)
    record.refresh_from_db()
    assert (record.created, record.updated, record.invalid) == (1, 1, 0)
    client = Client.objects.get(phone="79161111111")
    assert (client.timezone, client.tag) == ("Asia/Omsk", "gold")
    # The same file again without the choice: the two are invalid rows, nothing changes.
    ClientImport.objects.all().delete()
    record = check_file(web, q2_in_process, body.replace("gold", "silver"))
    confirm(web, q2_in_process, record)
    assert (record.created, record.updated, record.invalid) == (0, 0, 2)
    assert Client.objects.get(phone="79161111111").tag == "gold"


def test_a_second_confirmation_imports_nothing_more(web, q2_in_process):
    record = check_file(web, q2_in_process, "phone,timezone\n79161234567,Europe/Moscow\n")
    confirm(web, q2_in_process, record)
    confirm(web, q2_in_process, record)
    assert Client.objects.count() == 1
    assert ClientImport.objects.get().created == 1


def test_the_page_caps_the_errors_and_the_download_has_them_all(web, q2_in_process):
    rows = 3 * IMPORT_ERRORS_SHOWN
    body = "phone,timezone\n" + "".join(f"bad{i},Europe/Moscow\n" for i in range(rows))
    record = check_file(web, q2_in_process, body)
    record = confirm(web, q2_in_process, record)
    assert record.invalid == rows
    response = web.get(reverse("dashboard:client_import_detail", args=[record.pk]))
    page = response.content.decode()
    assert f"the first {IMPORT_ERRORS_SHOWN} of {rows}" in page
    assert page.count("<td>bad") == IMPORT_ERRORS_SHOWN
    download = web.get(reverse("dashboard:client_import_errors", args=[record.pk]))
    lines = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert lines[0] == ["line", "phone", "reason"] and len(lines) == rows + 1
    assert lines[1][:2] == ["2", "bad0"]


def test_progress_is_polled_while_a_job_works(web):
    record = ClientImport.objects.create(
        filename="big.csv", data=b"x", status=ImportStatus.IMPORTING, rows=200_000
    )
    ClientImport.objects.filter(pk=record.pk).update(rows_done=50_000, created=49_000)
    url = reverse("dashboard:client_import_status", args=[record.pk])
    partial = web.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 1s"' in partial and f'hx-get="{url}"' in partial
    assert "<strong>50,000</strong> of about 200,000 rows: 49,000 added" in partial
    ClientImport.objects.filter(pk=record.pk).update(status=ImportStatus.DONE)
    partial = web.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in partial and "Imported" in partial


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("number,zone\n1,2\n", "missing: phone, timezone"),
        ("", "empty"),
        ("phone,timezone\n" + "\n" * 20, "more than 10 lines"),  # blank lines count
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "missing: phone, timezone"),
    ],
)
def test_a_file_that_cannot_be_imported_says_why_and_writes_nothing(
    web, q2_in_process, monkeypatch, data, message
):
    monkeypatch.setattr(imports, "IMPORT_MAX_ROWS", 10)
    with q2_in_process():
        response = post(web, IMPORT, {"file": upload(data)}, page=IMPORT)
    if response.status_code == 200:  # refused by the form (an empty upload)
        assert message in response.content.decode() or "empty" in response.content.decode()
    else:
        record = ClientImport.objects.get()
        record.refresh_from_db()
        assert record.status == ImportStatus.FAILED
        assert message in record.file_error
        page = web.get(response["Location"]).content.decode()
        assert "cannot be imported" in page and "Import</button>" not in page
        response = post(web, reverse("dashboard:client_import_confirm", args=[record.pk]), {})
        assert response.status_code == 302
    assert Client.objects.count() == 0


def test_an_upload_over_the_limit_gets_413_before_it_is_read(web, settings):
    settings.CLIENT_IMPORT_MAX_BYTES = 1000
    body = "phone,timezone\n" + "79161234567,Europe/Moscow\n" * 100_000  # 2.6 MB
    response = post(web, IMPORT, {"file": upload(body)}, page=IMPORT)
    assert response.status_code == 413
    assert "larger than" in response.content.decode()
    assert ClientImport.objects.count() == 0
    # Under the multipart allowance but over the limit: the form says so, also 413.
    response = post(web, IMPORT, {"file": upload(body[:5000])}, page=IMPORT)
    assert response.status_code == 413 and "larger than" in response.content.decode()
    assert ClientImport.objects.count() == 0


def test_an_import_post_without_csrf_is_refused(db):
    staff = get_user_model().objects.create_user("bob", is_staff=True)
    web = HttpClient(enforce_csrf_checks=True)
    web.force_login(staff)
    response = web.post(IMPORT, {"file": upload("phone,timezone\n79161234567,Europe/Moscow\n")})
    assert response.status_code == 403
    assert ClientImport.objects.count() == 0


def test_blank_lines_count_toward_the_row_cap_in_a_direct_import(db, monkeypatch):
    monkeypatch.setattr(imports, "IMPORT_MAX_ROWS", 5)
    make_clients(0)
    result = imports.import_clients_csv(
        [b"phone,timezone\n79161234567,Europe/Moscow\n" + b"\n" * 9]
    )
    assert "more than 5 lines" in result.file_error
    assert Client.objects.count() == 0
