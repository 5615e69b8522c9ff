/* The email designer: GrapesJS with the MJML plugin (both vendored under emails/static/emails/vendor/).
 *
 * The page passes its settings in <script id="designer-config" type="application/json">: the saved
 * design (GrapesJS project data, loaded exactly as saved), where to save it and to upload images,
 * and local image URLs that replace the plugin's defaults. Nothing here may make the browser fetch
 * from the internet: telemetry, the icon font, the Google Fonts links of mjml-browser and the
 * placeholder and social images of the plugin's blocks are all switched off or replaced below.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("designer-config").textContent);
  const csrfToken = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const statusEl = document.getElementById("designer-status");
  const problemsEl = document.getElementById("designer-problems");
  const saveButton = document.getElementById("designer-save");

  // Sections, columns, text, image, button, divider, spacer, social and raw HTML. Left out: hero and
  // navbar, whose defaults point at images on third-party hosts.
  const BLOCKS = [
    "mj-1-column", "mj-2-columns", "mj-3-columns", "mj-wrapper",
    "mj-text", "mj-image", "mj-button", "mj-divider", "mj-spacer",
    "mj-social-group", "mj-social-element", "mj-raw",
  ];
  // mjml-browser's social icons live on www.mailjet.com: each element names Timonier's icon instead
  // (emails/static/emails/social/, the same the server compiles with).
  const socialIcon = (name) => `${config.socialIconBase}${name}.png`;
  const social = (name, label) =>
    `<mj-social-element name="${name}" src="${socialIcon(name)}">${label}</mj-social-element>`;
  const BLOCK_OVERRIDES = {
    "mj-social-group": {
      content:
        '<mj-social font-size="12px" icon-size="24px" border-radius="12px" mode="horizontal">' +
        social("facebook", "Facebook") + social("twitter", "Twitter") + social("linkedin", "LinkedIn") +
        "</mj-social>",
    },
    "mj-social-element": { content: social("facebook", "Facebook") },
    "mj-raw": { content: "<mj-raw><p>Raw HTML</p></mj-raw>" },
    // The plugin's own wrapper sample has a self-closing <mj-divider/> that the HTML parser leaves
    // open (swallowing the next text) and whitespace inside <mj-image>: both fail to compile.
    "mj-wrapper": {
      content:
        '<mj-wrapper border="1px solid #dddddd" padding="20px">' +
        "<mj-section><mj-column><mj-text>Content in a wrapper</mj-text></mj-column></mj-section>" +
        "</mj-wrapper>",
    },
  };
  const STARTER =
    "<mjml><mj-body><mj-section><mj-column>" +
    "<mj-text font-size=\"20px\">Hello {{ customer.name | default: \"there\" }},</mj-text>" +
    "</mj-column></mj-section></mj-body></mjml>";

  const mjmlBundle = window["grapesjs-mjml"];
  const mjmlPlugin = mjmlBundle.default || mjmlBundle;
  const hasDesign = config.design && Object.keys(config.design).length > 0;

  const editor = window.grapesjs.init({
    container: "#gjs",
    height: "100%",
    telemetry: false,
    cssIcons: "",
    storageManager: false,
    projectData: hasDesign ? config.design : undefined,
    components: hasDesign ? undefined : STARTER,
    canvas: { styles: [], scripts: [] },
    assetManager: {
      upload: config.uploadUrl,
      uploadName: "files",
      multiUpload: true,
      multiUploadSuffix: "",
      showUrlInput: false, // images come from Timonier: a pasted URL would make the page load another host
      autoAdd: true,
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken },
      assets: config.assets,
    },
    plugins: [
      (ed) =>
        mjmlPlugin(ed, {
          blocks: BLOCKS,
          block: (id) => BLOCK_OVERRIDES[id] || {},
          imagePlaceholderSrc: config.placeholderSrc,
          fonts: {},
        }),
    ],
  });
  window.timonierDesigner = editor;

  // GrapesJS's own panel buttons draw Font Awesome icons, a stylesheet it would load from a CDN
  // (`cssIcons`, switched off above): they get inline SVG icons and a name instead.
  const svg = (path) => `<svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"><path fill="currentColor" d="${path}"/></svg>`;
  const BUTTONS = {
    "sw-visibility": ["Show outlines", "M3 3v18h18V3H3m16 16H5V5h14v14Z"],
    preview: ["Preview", "M12 9a3 3 0 1 0 0 6 3 3 0 0 0 0-6m0 8a5 5 0 1 1 0-10 5 5 0 0 1 0 10m0-12.5C7 4.5 2.73 7.61 1 12c1.73 4.39 6 7.5 11 7.5s9.27-3.11 11-7.5c-1.73-4.39-6-7.5-11-7.5Z"],
    fullscreen: ["Full screen", "M5 5h5v2H7v3H5V5m9 0h5v5h-2V7h-3V5m3 9h2v5h-5v-2h3v-3m-7 3v2H5v-5h2v3h3Z"],
    "export-template": ["View code", "M14.6 16.6 19.2 12l-4.6-4.6L16 6l6 6-6 6-1.4-1.4m-5.2 0L4.8 12l4.6-4.6L8 6l-6 6 6 6 1.4-1.4Z"],
    "open-sm": ["Styles", "M12 3a9 9 0 0 0 0 18 1.5 1.5 0 0 0 1.1-2.5 1.5 1.5 0 0 1 1.1-2.5H16a5 5 0 0 0 5-5c0-4.42-4.03-8-9-8M6.5 12a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3m3-4a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3m5 0a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3m3 4a1.5 1.5 0 1 1 0-3 1.5 1.5 0 0 1 0 3Z"],
    "open-tm": ["Settings", "M3 17v2h6v-2H3M3 5v2h10V5H3m10 16v-2h8v-2h-8v-2h-2v6h2M7 9v2H3v2h4v2h2V9H7m14 4v-2H11v2h10m-6-4h2V7h4V5h-4V3h-2v6Z"],
    "open-layers": ["Layers", "M3 6h18v2H3V6m0 5h18v2H3v-2m0 5h18v2H3v-2Z"],
    "open-blocks": ["Blocks", "M3 3h8v8H3V3m10 0h8v8h-8V3M3 13h8v8H3v-8m10 0h8v8h-8v-8Z"],
  };
  for (const panel of editor.Panels.getPanels().models) {
    for (const button of panel.get("buttons").models) {
      const known = BUTTONS[button.id];
      if (known) {
        button.set({ className: "", label: svg(known[1]), attributes: { title: known[0], "aria-label": known[0] } });
      }
    }
  }

  // A social element switched to another network gets that network's icon, if it had one of ours.
  editor.on("component:update:attributes", (component) => {
    if (component.get("type") !== "mj-social-element") return;
    const { name, src } = component.getAttributes();
    if (!src || !src.startsWith(config.socialIconBase) || !config.socialIcons.includes(name)) return;
    if (src !== socialIcon(name)) component.addAttributes({ src: socialIcon(name) });
  });

  let dirty = false;
  let saving = false;
  const setStatus = (text, kind) => {
    statusEl.textContent = text;
    statusEl.dataset.kind = kind || "";
  };
  editor.on("load", () => {
    editor.Panels.getButton("views", "open-blocks").set("active", true);
    // Loading the project fires updates of its own: only what the user does afterwards is a change.
    setTimeout(() => {
      editor.on("update", () => {
        dirty = true;
        setStatus("Unsaved changes", "warn");
      });
    }, 0);
    document.body.dataset.designerReady = "true";
  });
  editor.on("asset:upload:error", (error) => {
    setStatus(`Image upload failed: ${error && error.message ? error.message : error}`, "error");
  });
  editor.on("asset:upload:response", (response) => {
    if (response && response.errors && response.errors.length) {
      setStatus(response.errors.join(" "), "error");
    }
  });

  function showProblems(problems) {
    problemsEl.replaceChildren(
      ...problems.map((problem) => {
        const item = document.createElement("li");
        item.textContent = problem;
        return item;
      })
    );
    problemsEl.hidden = problems.length === 0;
  }

  async function save() {
    if (saving) return;
    saving = true;
    saveButton.disabled = true;
    setStatus("Saving…", "");
    // Text being typed lives in the rich text editor until it closes: close it so the save has it.
    const editing = editor.getEditing();
    const editingView = editing && editing.getView();
    if (editingView && editingView.disableEditing) await editingView.disableEditing();
    const body = JSON.stringify({ design: editor.getProjectData(), mjml: editor.getHtml() });
    try {
      const response = await fetch(config.saveUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken, Accept: "application/json" },
        body,
      });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        setStatus(`Not saved: ${answer.message || response.status + " " + response.statusText}`, "error");
        return;
      }
      dirty = false;
      const problems = answer.problems || [];
      showProblems(problems);
      setStatus(problems.length ? "Saved, with problems to fix before publishing" : "Saved", problems.length ? "warn" : "ok");
    } catch (error) {
      setStatus(`Not saved: ${error.message}`, "error");
    } finally {
      saving = false;
      saveButton.disabled = false;
    }
  }

  saveButton.addEventListener("click", save);
  document.addEventListener("keydown", (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === "s") {
      event.preventDefault();
      save();
    }
  });
  window.addEventListener("beforeunload", (event) => {
    if (dirty) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
})();
