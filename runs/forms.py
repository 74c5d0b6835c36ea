from django import forms


class JobSpecForm(forms.Form):
    spec_text = forms.CharField(label="Spec (YAML)", widget=forms.Textarea(attrs={"rows": 24, "spellcheck": "false"}))
    git_repo = forms.CharField(label="Git repository", required=False, max_length=500)
    git_sha = forms.CharField(label="Git commit sha", required=False, max_length=40)
    git_path = forms.CharField(label="Path in repository", required=False, max_length=500)
