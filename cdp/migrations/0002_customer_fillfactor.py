from django.db import migrations


def set_fillfactor(apps, schema_editor):
    # Room in each page for the new version of a row: updates of unindexed columns (traits,
    # last_seen_at) then stay on the page (HOT) and touch no index.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE cdp_customer SET (fillfactor = 70)")


class Migration(migrations.Migration):
    dependencies = [("cdp", "0001_initial")]

    operations = [migrations.RunPython(set_fillfactor, migrations.RunPython.noop)]
